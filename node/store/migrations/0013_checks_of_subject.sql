-- Who checked me: a subject's checks are read by subject, newest first (node/checks/history.py).
CREATE INDEX check_answers_subject ON check_answers (subject_id);
