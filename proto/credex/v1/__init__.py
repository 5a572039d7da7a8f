"""The credex wire contract, ``credex.v1``: generated from the ``.proto`` files beside this one."""
