"""Can one roadside frame tell whether a hidden agent will cross the ego's path?

Reads a synthetic world's visibility sidecar (``visibility.json``: per frame, each agent's box
in the roadside image, and which agents the ground truth yields to) and fits small MLPs
(NumPy features, torch, seed 0) that predict "this agent conflicts" for every frame where a
crossing-road agent (roles crossing / waiting / cross) is seen by the roadside camera and
not by the ego camera, from
  - its box in the current roadside frame plus the time in the sequence,
  - the same plus its box LAG frames earlier (motion).
Ground-truth boxes: perfect perception, so what one frame cannot tell is not a matter of
pixels. Train on sequences whose number is not a multiple of 4, score on the others;
accuracy and AUC by time in the sequence (the yield is decided in its first seconds).

  python scripts/roadside_motion_probe.py runs/synthetic/train_world_early [--lag 5]
"""

import argparse
import json

import numpy as np
import torch

ROLES = ("crossing", "waiting", "cross")  # crossing: conflicts; waiting / cross: stops, or crosses early


def rows_of(root, lag):
    vis = json.load(open(f"{root}/visibility.json"))["sequences"]
    scenarios = json.load(open(f"{root}/scenarios.json"))
    rows = []
    for seq, info in vis.items():
        if scenarios.get(seq) != "occluded_crossing":
            continue
        frames = info["frames"]
        keys = sorted(frames)
        for i, key in enumerate(keys):
            frame = frames[key]
            for agent in frame.get("roadside", []):
                if agent in frame.get("ego", []) or info["agents"][agent]["role"] not in ROLES:
                    continue
                box = frame["roadside_boxes"].get(agent)
                if box is None:
                    continue
                earlier = frames[keys[max(0, i - lag)]].get("roadside_boxes", {}).get(agent, box)
                rows.append((int(seq), i, agent in set(info.get("conflict", [])), box, earlier))
    return rows


def auc(score, label):
    order = np.argsort(score)
    ranks = np.empty(len(score))
    ranks[order] = np.arange(len(score))
    pos = label > 0.5
    n1, n0 = pos.sum(), (~pos).sum()
    return float("nan") if n1 == 0 or n0 == 0 else (ranks[pos].sum() - n1 * (n1 - 1) / 2) / (n1 * n0)


def fit_scores(x, y, train):
    torch.manual_seed(0)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                              torch.nn.ReLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    mask = torch.tensor(train)
    for _ in range(1500):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(x[mask]).squeeze(1), y[mask]).backward()
        opt.step()
    with torch.no_grad():
        return net(x).squeeze(1).numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--lag", type=int, default=5, help="frames between the two boxes (10 Hz: 5 = 0.5 s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = rows_of(args.root, args.lag)
    seqs = np.array([r[0] for r in rows])
    y = np.array([r[2] for r in rows], dtype=np.float32)
    frame = np.array([r[1] for r in rows])
    t = frame[:, None] / 120.0
    box, earlier = np.array([r[3] for r in rows]), np.array([r[4] for r in rows])
    test = seqs % 4 == 0
    print(f"{args.root}: {len(rows)} agent-frames of {len(set(seqs))} occluded_crossing sequences, "
          f"{y.mean():.1%} conflicting; scored on {test.sum()} of sequences = 0 mod 4")
    one = fit_scores(np.hstack([box, t]), y, ~test)
    two = fit_scores(np.hstack([box, box - earlier, t]), y, ~test)
    print(f"all frames: AUC one frame {auc(one[test], y[test]):.3f}, "
          f"two frames {auc(two[test], y[test]):.3f}")
    print("| frames | n | conflicting | one frame: accuracy / AUC | two frames: accuracy / AUC |")
    print("|---|---|---|---|---|")
    for lo in range(0, 120, 15):
        m = test & (frame >= lo) & (frame < lo + 15)
        if m.sum() == 0 or y[m].min() == y[m].max():
            continue
        acc = lambda s: ((s[m] > 0) == (y[m] > 0.5)).mean()  # noqa: E731
        print(f"| {lo}-{lo + 14} | {m.sum()} | {y[m].mean():.2f} | "
              f"{acc(one):.3f} / {auc(one[m], y[m]):.3f} | {acc(two):.3f} / {auc(two[m], y[m]):.3f} |")


if __name__ == "__main__":
    main()
