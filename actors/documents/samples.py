"""The bundled sample set: small documents of invented prose, and a minimal PDF writer to make them.

Run ``python -m actors.documents.samples [DIR]`` to write them (default: ``samples/`` at the root
of the checkout). The output is byte-for-byte the same on every run, so the committed files can be
checked against this module.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

__all__ = ["SAMPLES", "make_pdf", "write_samples"]

# US Letter; a 72 pt (one inch) margin; Helvetica 11 pt on 14 pt leading fits ~88 characters.
_PAGE_WIDTH, _PAGE_HEIGHT, _MARGIN = 612, 792, 72
_FONT_SIZE, _LEADING, _HEADING_SIZE, _WRAP = 11, 14, 16, 88
_MAX_LINES = (_PAGE_HEIGHT - 2 * _MARGIN) // _LEADING


def make_pdf(pages: list[list[str]], *, title: str | None = None) -> bytes:
    """Write a minimal PDF 1.4 with one page per item of `pages`, each a list of paragraphs.

    The first paragraph of the first page is set as a heading in Helvetica-Bold if `title` is
    given. The text must be ASCII (it goes into the content stream as a literal string).
    """
    objects: list[bytes] = []  # objects[i] is object number i + 1

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in when the page tree is known
    page_tree = add(b"")
    # WinAnsiEncoding: under the fonts' own StandardEncoding, byte 0x27 is a curly quote.
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /%s /Encoding /WinAnsiEncoding >>"
    regular = add(font % b"Helvetica")
    bold = add(font % b"Helvetica-Bold")
    info = add(
        b"<< /Producer (actors sample generator)"
        + (b" /Title " + _pdf_string(title) if title else b"")
        + b" >>"
    )
    kids = []
    for number, paragraphs in enumerate(pages):
        content = _page_content(paragraphs, heading=title if number == 0 else None)
        stream = add(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %d %d] "
                b"/Resources << /Font << /F1 %d 0 R /F2 %d 0 R >> >> /Contents %d 0 R >>"
                % (page_tree, _PAGE_WIDTH, _PAGE_HEIGHT, regular, bold, stream)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % page_tree
    objects[page_tree - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % kid for kid in kids),
        len(kids),
    )

    # The binary comment on line 2 tells transfer tools that the file is not plain text.
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset  # each entry is exactly 20 bytes
    out += b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        catalog,
        info,
        xref,
    )
    return bytes(out)


def _page_content(paragraphs: list[str], *, heading: str | None) -> bytes:
    ops = [b"BT", b"%d %d Td" % (_MARGIN, _PAGE_HEIGHT - _MARGIN)]
    lines = 0
    if heading:
        ops += [b"/F2 %d Tf" % _HEADING_SIZE, _pdf_string(heading) + b" Tj"]
        ops += [b"0 -%d Td" % (_LEADING * 2)]
        lines += 2
    ops.append(b"/F1 %d Tf" % _FONT_SIZE)
    for paragraph in paragraphs:
        for line in textwrap.wrap(paragraph, _WRAP):
            ops += [_pdf_string(line) + b" Tj", b"0 -%d Td" % _LEADING]
            lines += 1
        ops.append(b"0 -%d Td" % (_LEADING // 2))  # a half-line gap between paragraphs
    ops.append(b"ET")
    if lines > _MAX_LINES:
        raise ValueError(f"a page holds {_MAX_LINES} lines; this one needs {lines}")
    return b"\n".join(ops)


def _pdf_string(text: str) -> bytes:
    """Quote `text` as a PDF literal string: (..) with \\, ( and ) escaped."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode("ascii") + b")"


# The prose below is original, written for this project; every place, person and number in it is
# invented.

_HARBOUR_TITLE = "Lindqvist Harbour Authority: Third Quarter Report"
_HARBOUR = [
    [
        "The harbour handled 412 vessel calls in the third quarter, up from 371 in the second. "
        "Most of the increase came from short-sea container feeders, which moved their weekly "
        "rotation from the northern port at Skarvik after its crane outage in July. Bulk "
        "grain arrivals were flat, and the ferry service kept its usual timetable.",
        "Average berth occupancy rose to 78 percent. The east quay was the busiest stretch; on "
        "eleven days every berth there was taken and two feeders waited at anchor for more than "
        "six hours. The authority has asked the pilots' association to publish a daily berth "
        "forecast so that masters can slow down at sea instead of queueing in the roads.",
        "Cargo volumes reached 1.9 million tonnes. Containers made up 46 percent of that, dry "
        "bulk 31 percent and timber 12 percent. Timber is down for the third quarter in a row, "
        "which the sawmills attribute to wet weather in the forests rather than to lower demand.",
    ],
    [
        "Two safety events were reported. A mooring line parted on the west quay during a gale "
        "in September; nobody was hurt, and the line had passed its inspection in June. A forklift "
        "struck a parked trailer in the timber yard at low speed. Both events were reviewed with "
        "the crews involved, and the yard has repainted its walkways.",
        "The dredging of the inner channel finished two weeks early and under budget. The "
        "channel now holds 11.5 metres at low water, which lets the larger feeders enter without "
        "waiting for the tide. The surveyors will check the depth again in spring, after the "
        "winter storms have moved the sand.",
        "Next quarter the authority will open tenders for a shore power connection on the east "
        "quay, start the consultation on a new cruise berth, and publish its first emissions "
        "inventory. The board meets on the fourth of December to approve the winter budget.",
    ],
]

_BEES_TITLE = "Urban Beekeeping in Ostermoor: Survey Results"
_BEES = [
    [
        "In May the Ostermoor Beekeepers' Circle asked its members to describe their hives, "
        "their losses over the winter and the flowers their bees visit. Fifty-eight keepers "
        "answered, between them looking after 203 colonies on balconies, roofs and allotments.",
        "Winter losses averaged 14 percent, lower than the 21 percent reported two years ago. "
        "Keepers who treated for varroa mites in late summer lost fewer colonies than those who "
        "treated in autumn, and colonies on roofs fared slightly worse than those at ground "
        "level, probably because of wind.",
        "Lime trees along the canal were named as the main summer forage by most respondents, "
        "followed by the clover on the old railway embankment. Several keepers asked the council "
        "to delay mowing the embankment until the clover has finished flowering.",
        "The Circle will repeat the survey next spring and will lend two hive scales to members "
        "who want to record the weight of their colonies through the season.",
    ]
]

_FIELD_NOTES = """\
Field Notes: Lichen Transects on Varden Island

We walked the three permanent transects on the north shore between the fourth and the ninth of \
August. Fog delayed us on the first morning, and the tide cut the western transect short on the \
sixth, so that line was finished on the eighth instead.

Cover of the grey shield lichen on the boulders above the splash zone looks much as it did last \
year. The orange crust species below it has spread a little further down the rock, which agrees \
with the warmer, drier summer. We photographed every quadrat from the same marked stake so that \
the images can be compared directly with the earlier series.

The most striking change is on the old stone wall near the landing stage. Half of the wall was \
rebuilt in the spring, and the new stones are bare. It will be interesting to see which species \
arrive first; on the mainland the first colonists on fresh granite were usually small grey \
crusts, and the leafy species followed only after five or six years.

Sheep have found their way back onto the headland, and their paths now cross the eastern \
transect in two places. We moved one marker post half a metre to keep it out of the trampled \
ground and noted the new position in the register.

Next visit: late October, weather permitting. Bring spare marker posts, a second camera battery \
and the older quadrat photographs on paper, since the island still has no signal.
"""

_ALLOTMENT = """\
Minutes of the Ashgrove Allotment Society, Autumn Meeting

Twenty-three members attended, and four sent apologies. The chair opened the meeting by thanking \
the volunteers who repaired the water tank after the frost in March.

The treasurer reported a small surplus for the year. Plot fees will stay the same next year, but \
the society will ask members for a voluntary contribution towards a new shed for the shared tools. \
Several members said they would prefer a lockable cabinet, which would cost much less.

The plot inspection found most plots well kept. Three plots have been neglected for a whole \
season, and their holders will be contacted before any plot is offered to the waiting list, which \
now has thirty-one names on it.

Members discussed the slug problem at length. The society will not buy pellets, and instead will \
run a workshop on beer traps, copper tape and encouraging frogs by digging small ponds. A member \
offered her surplus frogspawn next spring.

The next meeting is on the second Saturday of February, in the church hall.
"""

_SOLAR_MARKDOWN = """\
# Millbrook Community Solar: Second Year Update

The cooperative's panels on the school roof and the sports hall produced **142 megawatt hours** \
in their second year, about 6 percent more than forecast. A sunny spring made up for a dull \
August, and the inverter fault of last winter has not returned.

## Money

Members received a return of 3.8 percent on their shares, paid in November. The cooperative \
also put aside enough to replace one inverter without borrowing. See the \
[full accounts](accounts.pdf) for the details.

## What we learned

- Cleaning the panels once in spring was worth it; the gain paid for the cleaning in six weeks.
- The school uses most of its electricity in the morning, so *east-facing* panels suit it best.
- Volunteers who read the meters each month caught a faulty meter that the supplier had missed.

| Site | Panels | Output (MWh) |
|------|-------:|-------------:|
| School roof | 240 | 88 |
| Sports hall | 150 | 54 |

## Next steps

The board proposes a third site on the roof of the fire station. Members will vote at the \
annual meeting in March; the survey of the roof is already done, and the fire service has \
agreed in principle.
"""

_CLOCK_HTML = """\
<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Newsletter of the Tarrow Museum of Timekeeping</title>
  <style>body { font-family: Georgia, serif; } .note { color: #555; }</style>
  <script>document.addEventListener("DOMContentLoaded", () => console.log("ready"));</script>
</head>
<body>
  <header><h1>The Escapement</h1>
    <p class="note">Winter issue, for friends of the museum</p></header>
  <article>
    <h2>The tower clock is ticking again</h2>
    <p>After eighteen months in the workshop, the movement of the old market tower clock is back
    on display in the main hall. Our volunteers cleaned every wheel, replaced two worn pivots and
    made a new suspension spring for the pendulum, which now swings once every two seconds.</p>
    <p>Visitors can watch the clock wind itself each hour. The weights drop about a metre a day,
    and a small electric motor lifts them again &mdash; a change from the days when the town paid
    a keeper to climb the tower every morning.</p>
    <h2>Coming up</h2>
    <ul>
      <li>January: a talk on marine chronometers and the search for longitude.</li>
      <li>February: a family workshop on building a water clock from plastic bottles.</li>
      <li>March: the annual repair caf&eacute; for pocket watches and mantel clocks.</li>
    </ul>
    <p>The museum is open from Wednesday to Sunday. Entry is free for members &amp; children.</p>
  </article>
  <footer><p>Tarrow Museum of Timekeeping, Mill Lane, Tarrow.</p></footer>
</body>
</html>
"""

_OBSERVATORY = {
    "title": "Kestrel Hill Observatory: Observing Log",
    "observatory": {"name": "Kestrel Hill Observatory", "altitude_m": 412},
    "season": "Autumn",
    "sessions": [
        {
            "date": "2026-09-14",
            "seeing_arcsec": 2.1,
            "observers": ["A. Okafor", "L. Brandt"],
            "notes": (
                "Clear skies after a windy afternoon. We imaged the double cluster in Perseus for "
                "the outreach evening and tested the new focuser, which held focus all night."
            ),
        },
        {
            "date": "2026-10-02",
            "seeing_arcsec": 3.4,
            "observers": ["L. Brandt"],
            "notes": (
                "High cloud came and went. Only twenty minutes of usable data on the variable "
                "star programme, but the comparison stars were all measured."
            ),
        },
        {
            "date": "2026-10-29",
            "seeing_arcsec": 1.8,
            "observers": ["A. Okafor", "R. Sato", "M. Ivers"],
            "notes": (
                "The best night of the season. The students recorded a full light curve of an "
                "eclipsing binary, and the dome shutter motor, repaired in September, worked "
                "without a fault."
            ),
        },
    ],
    "summary": (
        "Three sessions were possible in an unusually cloudy autumn. The new focuser and the "
        "repaired shutter both proved reliable, and the variable star programme gained one "
        "complete light curve."
    ),
    "published": True,
}

SAMPLES: dict[str, bytes] = {
    "harbour-report.pdf": make_pdf(_HARBOUR, title=_HARBOUR_TITLE),
    "beekeeping-survey.pdf": make_pdf(_BEES, title=_BEES_TITLE),
    "lichen-field-notes.txt": _FIELD_NOTES.encode(),
    "allotment-minutes.txt": _ALLOTMENT.encode(),
    "community-solar.md": _SOLAR_MARKDOWN.encode(),
    "museum-newsletter.html": _CLOCK_HTML.encode(),
    "observatory-log.json": (json.dumps(_OBSERVATORY, indent=2) + "\n").encode(),
}
"""The sample documents by file name."""


def write_samples(directory: Path) -> list[Path]:
    """Write every sample into `directory` (created if missing); return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in SAMPLES.items():
        path = directory / name
        path.write_bytes(data)
        paths.append(path)
    return paths


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[2] / "samples"
    for written in write_samples(target):
        print(f"{written} ({written.stat().st_size} bytes)")
