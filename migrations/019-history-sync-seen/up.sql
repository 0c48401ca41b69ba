-- Issue 18's sync of the history, finished. `thread_seen`: the thread a run last read whole
-- for a done row and left nothing to send for, under the rules it ran by (a hash of the
-- thread's digest and the message./note. fields --update-fields allowed; NULL: none
-- recorded, or the last run that read it reported it). A done row whose export drops an
-- item it made, or whose edit --update-fields leaves out, differs from its records as
-- sent for good: this tells the next night with the same export and rules that there is
-- nothing to read again (see README "Running it from cron").
ALTER TABLE rows ADD COLUMN thread_seen INTEGER;

-- And per run, the messages and notes it updated (migration 011 kept the other sync
-- counts): `status` shows them beside the rows updated. NULL: a run of a version before.
ALTER TABLE runs ADD COLUMN messages_updated INTEGER;
ALTER TABLE runs ADD COLUMN notes_updated INTEGER;
