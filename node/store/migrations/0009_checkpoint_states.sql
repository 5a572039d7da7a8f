-- A checkpoint's state is one of four (credex.node.chain.checkpoints.CheckpointState):
-- 'own' (this node signed it), 'pending' (not that many events held yet),
-- 'verified' (our tree has the same root at that size), 'conflict' (evidence of
-- equivocation). A misspelt state would hide a checkpoint from every query; refuse it.

ALTER TABLE checkpoints ADD CONSTRAINT checkpoints_state_known
    CHECK (state IN ('own', 'pending', 'verified', 'conflict'));
