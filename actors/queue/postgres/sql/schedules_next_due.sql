-- When the earliest schedule is next due (NULL: there is none).
SELECT min(next_tick_at) FROM schedules
