-- Usage feedback (credit-use.md, Check rule 7) carries a result text and a department code
-- beside the department's name. Earlier feedback has neither: empty, not invented.
ALTER TABLE check_feedback ADD COLUMN result text NOT NULL DEFAULT '';
ALTER TABLE check_feedback ADD COLUMN department_code text NOT NULL DEFAULT '';
