-- Pause ($2 true) or resume the whole queue ($1 = '') or tenant $1, at $3 (now).
INSERT INTO queue_controls (tenant_id, paused, updated_at) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at
