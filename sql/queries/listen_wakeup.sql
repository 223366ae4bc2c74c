-- Subscribes this session to producers' wake-ups (the channel of notify_wakeup.sql).
LISTEN outbox_wakeup
