"""The one table train.py, test.py and draw.py dispatch through: what to do for the
task a model declares (`SegNet.task`).

    semantic   a class label per pixel (GCN, FCN, DeepLab v3+, U-Net, SegNet):
               `learning.semantic`
    instance   a mask per object (SOLO): `learning.instances`

Each task module offers the same functions: `demo_root(name)`, `evaluator(args)`,
`read_classes(train_dir)` (the class set the data brings: `common.labels.Classes`),
`read_training_data(train_dir, args, model)`, `num_examples(train_set)`,
`loss(model)`, `metrics(model)`, `training_stream(...)`, `validation_data(...)`,
`scorers(model, val_set, batch_size)` (callbacks that put the validation score into
fit's logs), `layout` (what a split folder holds), `history_columns`, `clipnorm`
(the default of --clipnorm), `resizes`, `default_resize` (of --resize), `default_classes` (what a run that recorded no classes
predicts), `test(model, test_dir, size, args, run_dir, draws, classes)` and
`renderer(model, args, classes)`.
"""

from learning import instances, semantic

TASKS = {"semantic": semantic, "instance": instances}
