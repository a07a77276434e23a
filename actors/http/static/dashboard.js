// The dashboard's only script: live regions fed by server-sent events, and "select all".
// Without it every page still works; it only keeps figures current without a reload.
"use strict";

// An element with data-live="URL" shows the HTML that each "update" event of URL carries
// (rendered and escaped by the server's templates); "end" says the stream is over.
for (const region of document.querySelectorAll("[data-live]")) {
  const source = new EventSource(region.dataset.live);
  source.addEventListener("update", (event) => {
    region.innerHTML = JSON.parse(event.data).html;
  });
  source.addEventListener("end", () => {
    source.close();
    region.removeAttribute("data-live");
    region.dataset.ended = "true";
  });
  // The browser reconnects on its own after a dropped connection; a refused one (signed
  // out, 401) closes the source, and the figures stay as they were.
  window.addEventListener("pagehide", () => source.close());
}

const all = document.getElementById("select-all");
if (all) {
  all.addEventListener("change", () => {
    for (const box of document.querySelectorAll('input[name="job"][type="checkbox"]')) {
      box.checked = all.checked;
    }
  });
}
