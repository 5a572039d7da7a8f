-- Objections mark a record disputed while it stays visible (credit-use.md, Objection 2): the mark
-- travels in every event as the origin's word, so each event still carries a whole state.
ALTER TABLE records ADD COLUMN disputed boolean NOT NULL DEFAULT false;
