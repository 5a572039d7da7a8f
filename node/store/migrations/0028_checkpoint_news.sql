-- Every change to a checkpoint row (a checkpoint signed or received, its state settled, cosignatures
-- merged, a row removed) rings channel credex_checkpoints with the origin, at commit. A node keeps the
-- latest checkpoint it serves of each origin in memory while it listens there
-- (credex.node.chain.latest), so every replica of a node learns of a change however it was made.
CREATE FUNCTION checkpoints_news() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('credex_checkpoints', OLD.origin);
    ELSE
        PERFORM pg_notify('credex_checkpoints', NEW.origin);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER checkpoints_news AFTER INSERT OR UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION checkpoints_news();
