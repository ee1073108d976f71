#!/usr/bin/env bash
# The main job on the built-in demo set: train -> test -> draw, sized for a laptop CPU
# (about 1.5-2 minutes on 2 cores). Extra flags go to train.py, e.g. ./demo.sh --epochs 2
set -euo pipefail
cd "$(dirname "$0")"
RUN=${RUN:-runs/demo}
python train.py --data demo --out "$RUN" --model gcn --image-size 64 --batch-size 8 \
    --epochs 5 --lr 1e-3 --evaluator iou --weights none "$@"
python test.py --data demo --run "$RUN"
python draw.py --images data/demo/test/images --run "$RUN" --out "$RUN/drawn"
echo
echo "learning curve: $RUN/learning_curve.png   history: $RUN/history.csv"
echo "metrics:        $RUN/metrics.json"
echo "overlays:       $RUN/draws/ (test, with truth)   $RUN/drawn/ (draw.py)"
