"""Faithfulness check of dfray's MesoNet port against the authors' Keras models.

Two halves, run by benchmarks/mesonet_keras_check.sh:

- `inputs OUT.npz MESONET_DIR` (dfray's Python): the four test images of the MesoNet authors, brought
  to 256 px by dfray's own face preprocessing (`dfray.faces.isotropic_resize` +
  `put_to_center`, exactly what `dfray detectors score` does), plus seeded random images;
- `keras IN.npz OUT.json` (a throwaway venv with tensorflow-cpu): builds Meso-4 and
  MesoInception-4 from the paper's layer list (the authors' `classifiers.py`), loads each
  .h5 with Keras and records Keras's P(real) for every input;
- `compare IN.npz KERAS.json` (dfray's Python): scores the same inputs with the converted
  builtins and prints max |P_fake_dfray - (1 - P_real_keras)| per model; exit 1 above 1e-4.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FILES = {  # builtin name -> (Keras file, arch)
    "meso4_df": ("Meso4_DF.h5", "meso4"),
    "meso4_f2f": ("Meso4_F2F.h5", "meso4"),
    "mesoinception4_df": ("MesoInception_DF.h5", "mesoinception4"),
    "mesoinception4_f2f": ("MesoInception_F2F.h5", "mesoinception4"),
}
TOL = 1e-4
N_RANDOM = 8
SEED = 0


def make_inputs(out: str, mesonet: str) -> None:
    import numpy as np

    from dfray.commands.detectors import load_image

    paths = sorted((Path(mesonet) / "test_images").glob("*/*.jpg"))
    if not paths:
        sys.exit(f"no test images under {mesonet}/test_images")
    imgs = [load_image(p, 256) for p in paths]
    rng = np.random.default_rng(SEED)
    rand = rng.integers(0, 256, size=(N_RANDOM, 256, 256, 3), dtype=np.uint8)
    names = [f"{p.parent.name}/{p.name}" for p in paths] + [
        f"random{SEED}_{i}" for i in range(N_RANDOM)
    ]
    np.savez(out, x=np.concatenate([np.stack(imgs), rand]), names=np.array(names))


def _keras_models():
    from tensorflow.keras.layers import (  # type: ignore
        BatchNormalization,
        Concatenate,
        Conv2D,
        Dense,
        Dropout,
        Flatten,
        Input,
        LeakyReLU,
        MaxPooling2D,
    )
    from tensorflow.keras.models import Model  # type: ignore

    def meso4():
        x = Input(shape=(256, 256, 3))
        y = x
        for n, k, pool in ((8, 3, 2), (8, 5, 2), (16, 5, 2), (16, 5, 4)):
            y = Conv2D(n, (k, k), padding="same", activation="relu")(y)
            y = BatchNormalization()(y)
            y = MaxPooling2D(pool_size=(pool, pool), padding="same")(y)
        return Model(inputs=x, outputs=_head(y))

    def _head(y):
        y = Flatten()(y)
        y = Dropout(0.5)(y)
        y = Dense(16)(y)
        y = LeakyReLU(0.1)(y)
        y = Dropout(0.5)(y)
        return Dense(1, activation="sigmoid")(y)

    def inception(a, b, c, d):
        def f(x):
            x1 = Conv2D(a, (1, 1), padding="same", activation="relu")(x)
            x2 = Conv2D(b, (1, 1), padding="same", activation="relu")(x)
            x2 = Conv2D(b, (3, 3), padding="same", activation="relu")(x2)
            x3 = Conv2D(c, (1, 1), padding="same", activation="relu")(x)
            x3 = Conv2D(c, (3, 3), dilation_rate=2, strides=1, padding="same",
                        activation="relu")(x3)
            x4 = Conv2D(d, (1, 1), padding="same", activation="relu")(x)
            x4 = Conv2D(d, (3, 3), dilation_rate=3, strides=1, padding="same",
                        activation="relu")(x4)
            return Concatenate(axis=-1)([x1, x2, x3, x4])
        return f

    def mesoinception4():
        x = Input(shape=(256, 256, 3))
        y = inception(1, 4, 4, 2)(x)
        y = BatchNormalization()(y)
        y = MaxPooling2D(pool_size=(2, 2), padding="same")(y)
        y = inception(2, 4, 4, 2)(y)
        y = BatchNormalization()(y)
        y = MaxPooling2D(pool_size=(2, 2), padding="same")(y)
        for pool in (2, 4):
            y = Conv2D(16, (5, 5), padding="same", activation="relu")(y)
            y = BatchNormalization()(y)
            y = MaxPooling2D(pool_size=(pool, pool), padding="same")(y)
        return Model(inputs=x, outputs=_head(y))

    return {"meso4": meso4, "mesoinception4": mesoinception4}


def run_keras(inp: str, out: str, mesonet: str) -> None:
    import numpy as np

    data = np.load(inp)
    x = data["x"].astype(np.float32) / 255.0  # the authors' ImageDataGenerator(rescale=1/255)
    builders = _keras_models()
    res = {"names": [str(n) for n in data["names"]], "p_real": {}}
    for name, (fname, arch) in FILES.items():
        model = builders[arch]()
        model.load_weights(str(Path(mesonet) / "weights" / fname))
        p = model.predict(x, batch_size=4, verbose=0).reshape(-1)
        res["p_real"][name] = [float(v) for v in p]
        print(f"keras {name}: {np.round(p[:4], 4).tolist()} ...", file=sys.stderr)
    Path(out).write_text(json.dumps(res, indent=1) + "\n")


def compare(inp: str, keras_json: str) -> int:
    import numpy as np

    from dfray.config import DetectorSpec
    from dfray.detectors import create_detector

    data = np.load(inp)
    ref = json.loads(Path(keras_json).read_text())
    worst = 0.0
    print(f"{'model':<20} {'inputs':>6} {'max |dP| images':>16} {'max |dP| random':>16}")
    for name, (_, arch) in FILES.items():
        det = create_detector(DetectorSpec(name=name, arch=arch, weights=f"builtin:{name}"))
        p_fake = det.predict(data["x"]).astype(np.float64)
        p_keras = 1.0 - np.asarray(ref["p_real"][name], dtype=np.float64)
        d = np.abs(p_fake - p_keras)
        n_img = len(data["x"]) - N_RANDOM
        print(f"{name:<20} {len(d):>6} {d[:n_img].max():>16.2e} {d[n_img:].max():>16.2e}")
        worst = max(worst, float(d.max()))
    print(f"max |dP(fake)| over all models and inputs: {worst:.2e} (tolerance {TOL:g})")
    return 0 if worst <= TOL else 1


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "inputs":
        make_inputs(sys.argv[2], sys.argv[3])
    elif cmd == "keras":
        run_keras(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(f"unknown command {cmd!r}")
