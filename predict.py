"""Generate a mesh sequence from an image sequence.

python predict.py input=demos/box
python predict.py model=sculpt4d ckpt=hf://TencentARC/Sculpt4D/blockmask_bf16 input=demos/door

A shim: the same as ``python -m sculpt4d.predict`` and the ``sculpt4d-predict`` console script.
"""

from sculpt4d.predict import main

if __name__ == "__main__":
    main()
