"""The web app: frames, a zip or a video in; an animated mesh in the browser out.

python app.py                       # http://127.0.0.1:7860 with the shipped tiny model
python app.py app.port=8080 app.host=0.0.0.0 num_steps=20

A shim: the same as ``python -m sculpt4d.app`` and the ``sculpt4d-app`` console script.
"""

from sculpt4d.app.__main__ import main

if __name__ == "__main__":
    main()
