# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Segmenting cats and dogs with a GCN, step by step
#
# This tutorial follows the article this project rebuilds (see `docs/walkthrough.md`):
# read the data, look at it, build the Global Convolutional Network, train it, watch
# it learn, score it the article's way and the honest way, draw its predictions, and
# open the saved run with Keras alone.
#
# It is a Python script and a notebook at once (jupytext's "percent" format):
#
#     python docs/tutorial.py              # from the repository root, 2-4 minutes on 2 CPU cores
#     jupyter notebook docs/tutorial.ipynb # the same cells as a notebook
#
# It trains on the built-in synthetic demo set at 64x64 from random weights, sized for
# a laptop CPU. `TUTORIAL_TINY=1` cuts it to a few images and one epoch (what the
# tests run); the article's own settings, for a GPU and the real dataset, are shown in
# the settings cell. Everything it writes goes to `runs/tutorial/`.

# %%
import os
import sys

# The repository root: docs/.. whether this runs as a script or as a notebook in docs/.
HERE = (os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals()
        else os.getcwd())
ROOT = os.path.dirname(HERE) if os.path.basename(HERE) == "docs" else HERE
sys.path.insert(0, ROOT)
IN_NOTEBOOK = "ipykernel" in sys.modules

import common  # noqa: E402,F401 (the project's TensorFlow settings, before it loads)
from learning.console import quiet_start  # noqa: E402

quiet_start()  # TensorFlow loads here, without its start-up lines
import matplotlib  # noqa: E402

if not IN_NOTEBOOK:
    matplotlib.use("Agg")  # a script saves its pictures; a notebook shows them too
import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

RUN = os.path.join(ROOT, "runs", "tutorial")
os.makedirs(RUN, exist_ok=True)


def show(path: str) -> None:
    """A picture the tutorial wrote: shown in a notebook, named in a script."""
    if IN_NOTEBOOK:
        from IPython.display import Image, display
        display(Image(filename=path))
    print("picture:", os.path.relpath(path, ROOT))


# %% [markdown]
# ## Settings
#
# The CPU settings below train in a couple of minutes. The article's run is the
# second set: 512x512 crops of the real dataset, batch 8, 300 epochs, an
# ImageNet-pretrained ResNet-50 v2 (`python -m datasets.download --root data/catdog`
# fetches the data; a GPU is needed in practice).

# %%
TINY = os.environ.get("TUTORIAL_TINY") == "1"
SETTINGS = dict(data="demo", image_size=64, batch_size=8, epochs=1 if TINY else 3,
                learning_rate=1e-3, weights=None, max_train=16 if TINY else None)
ARTICLE = dict(data="data/catdog", image_size=512, batch_size=8, epochs=300,
               learning_rate=1e-3, weights="imagenet", max_train=None)
# SETTINGS = ARTICLE  # on a GPU, with the real dataset
print(SETTINGS)

# %% [markdown]
# ## 1. Read the data: `read_data` and `DataSet`
#
# A dataset folder holds `images/NAME.jpg` beside `masks/NAME.png`. The masks are
# Oxford trimaps (1 pet, 2 background, 3 unknown border); a capitalised breed in NAME
# is a cat. `read_data` centre-crops or pads every pair to the training size and
# turns the trimap into one label per pixel: 0 background, 1 cat, 2 dog, and 255
# for pixels no score counts (the unknown border, padding).

# %%
from datasets import data as dataset  # noqa: E402
from datasets import demo  # noqa: E402
from datasets.stream import split_paths  # noqa: E402

root = (demo.ensure(os.path.join(ROOT, demo.DEFAULT_ROOT)) if SETTINGS["data"] == "demo"
        else os.path.join(ROOT, SETTINGS["data"]))
size = SETTINGS["image_size"]
images, labels, meta = dataset.read_data(os.path.join(root, "train"), size,
                                         return_meta=True, progress=False)
train_paths, val_paths = split_paths(meta["paths"], 0.1, seed=0)
pick = {p: i for i, p in enumerate(meta["paths"])}
train_idx = [pick[p] for p in train_paths][:SETTINGS["max_train"]]
val_idx = [pick[p] for p in val_paths]
train_set = dataset.DataSet(images[train_idx], labels[train_idx], seed=0)
val_set = dataset.DataSet(images[val_idx], labels[val_idx])
print(f"images {images.shape} {images.dtype}, labels {labels.shape} {labels.dtype}")
print(f"training on {train_set.num_examples}, validating on {val_set.num_examples}")
batch_images, batch_labels = train_set.next_batch(4)  # the article's minibatches

# %% [markdown]
# ## 2. Look at a few images and their labels

# %%
from learning.visualize import overlay  # noqa: E402

fig, axes = plt.subplots(2, 4, figsize=(10, 5))
for col in range(4):
    axes[0, col].imshow(batch_images[col])
    axes[1, col].imshow(overlay(batch_images[col], batch_labels[col]))
    for row in (0, 1):
        axes[row, col].axis("off")
axes[0, 0].set_title("image", loc="left")
axes[1, 0].set_title("label: cat orange, dog blue, unknown grey", loc="left")
fig.tight_layout()
fig.savefig(os.path.join(RUN, "samples.png"), dpi=80)
plt.close(fig)
show(os.path.join(RUN, "samples.png"))

# %% [markdown]
# ## 3. Build the GCN
#
# `models/gcn.py` is Fig. 2 of the paper: on each ResNet-50 v2 level a Global
# Convolution block (a k x k field from k x 1 and 1 x k convolutions) and a Boundary
# Refinement block, then upsampling and summing from the coarsest level down. The
# model is a Keras model: `uint8` images in, logits out.

# %%
import models  # noqa: E402

keras.utils.set_random_seed(0)
model = models.GCN(weights=SETTINGS["weights"], input_size=size)
print(f"{model.name}: {model.count_params():,} parameters, k = {model.k}")
for layer in model.layers:
    if layer.name.startswith("gcn_") and layer.name.endswith("_sum"):
        print(f"  {layer.name:28s} {layer.output.shape}")

# %% [markdown]
# ## 4. Train: SGD with momentum and the article's plateau rule
#
# `MomentumOptimizer` is the article's trainer: one Keras `fit` whose callbacks keep
# the best checkpoint by validation pixel accuracy, cut the learning rate on a
# plateau, and write the run folder (`best.keras`, `last.keras`, `history.csv`,
# `learning_curve.png`).

# %%
import shutil  # noqa: E402

from learning.evaluators import AccuracyEvaluator  # noqa: E402
from learning.optimizers import MomentumOptimizer  # noqa: E402

run_dir = os.path.join(RUN, "gcn")
shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time the tutorial runs
trainer = MomentumOptimizer(model, train_set, AccuracyEvaluator(), val_set,
                            batch_size=SETTINGS["batch_size"],
                            num_epochs=SETTINGS["epochs"],
                            learning_rate=SETTINGS["learning_rate"], tensorboard=False)
history = trainer.train(run_dir, verbose=False)
for row in history["epochs"]:
    print(f"epoch {row['epoch']}: loss {row['loss']:.4f}, train accuracy "
          f"{row['train_score']:.4f}, validation accuracy {row['val_score']:.4f}")

# %% [markdown]
# ## 5. The learning curve
#
# Left, the loss of every step; right, the training and validation scores per epoch,
# the best epoch starred.

# %%
show(os.path.join(run_dir, "learning_curve.png"))

# %% [markdown]
# ## 6. Score it: the article's accuracy, the honest one, and IoU
#
# The article averaged the accuracy per image and counted padding as background.
# Ours counts every labelled pixel of the test set once, in one confusion matrix, and
# adds the IoU of each class. Both are printed so they can be compared.

# %%
from learning.evaluators import ArticleAccuracy, ConfusionMatrix  # noqa: E402

test_images, test_labels, test_meta = dataset.read_data(
    os.path.join(root, "test"), size, return_meta=True, progress=False)
predicted = np.concatenate([model.predict_labels(test_images[i:i + 16])
                            for i in range(0, len(test_images), 16)])
cm = ConfusionMatrix().update(test_labels, predicted)
article = ArticleAccuracy().update(test_labels, predicted, test_meta["padding"])
print(f"pixel accuracy, the article's way: {article.result:.4f}")
print(f"pixel accuracy, every pixel once:  {cm.pixel_accuracy:.4f}")
for name, iou in zip(dataset.CLASS_NAMES, cm.per_class_iou):
    print(f"IoU {name:10s} {iou:.4f}")
print(f"mean IoU {cm.mean_iou:.4f}")

# %% [markdown]
# ## 7. Draw the predictions
#
# Image, truth and prediction, the class colours blended onto the photo.

# %%
rows = [np.concatenate([test_images[i], overlay(test_images[i], test_labels[i]),
                        overlay(test_images[i], predicted[i])], axis=1)
        for i in range(4)]
picture = np.concatenate(rows, axis=0).repeat(2, axis=0).repeat(2, axis=1)
from learning.visualize import save_rgb  # noqa: E402

save_rgb(os.path.join(RUN, "predictions.png"), picture)
show(os.path.join(RUN, "predictions.png"))

# %% [markdown]
# ## 8. Open the run with Keras alone
#
# A run's checkpoints are Keras files: after `import models` (which registers the
# project's layers), `keras.models.load_model` gives back the GCN itself.
# `best.keras` is the best validation epoch; `last.keras`, the last one with its
# optimizer state, predicts exactly what the model we trained does now.

# %%
best = keras.models.load_model(os.path.join(run_dir, "best.keras"))
last = keras.models.load_model(os.path.join(run_dir, "last.keras"))
print(f"{type(best).__name__}: {best.count_params():,} parameters, "
      f"trained {int(last.optimizer.iterations)} steps")
same = (last.predict_labels(test_images[:8]) == model.predict_labels(test_images[:8]))
print("last.keras predicts what the trained model does:", bool(same.all()))

# %% [markdown]
# The same steps from the command line are `./demo.sh` (train.py, test.py and draw.py
# on the demo set); `docs/training.md` and `docs/evaluation.md` go further.
