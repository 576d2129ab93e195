"""runkit: the machinery every command shares.

Run folders and user paths (:mod:`.cli`, :mod:`.runs`), atomic file IO (:mod:`.fileio`),
checkpoints and the newest-checkpoint finder (:mod:`.checkpoint`), EMA and RNG state for exact
resume (:mod:`.ema`, :mod:`.rng`), the one ``config.json`` + ``model.safetensors`` form of every
trained network (:mod:`.pretrained`), config dataclasses from dicts (:mod:`.config`), image
decoding and grids (:mod:`.images`), and the training skeleton both trainers run (:mod:`.training`).
It imports no other package of this project.
"""
