"""Train a stage of the Sculpt4D model (VAE -> 3D DiT -> 4D temporal adapter).

    python train.py experiment=paper_8 trainer.devices=8          # the original release's 4d_config_8
    python train.py attention=blockmask trainer.devices=8
    python train.py -m attention=blockmask,radial,framepack,rope experiment=tiny debug=fdr
    python train.py experiment=tiny_4d ckpt_path=last             # exact resume

A shim: the same as ``python -m sculpt4d.train`` and the ``sculpt4d-train`` console script (see
``sculpt4d.train``; ``sculpt4d.lit.task`` for resume, logging and the multi-node (SLURM) path).
"""

from sculpt4d.train import main

if __name__ == "__main__":
    main()
