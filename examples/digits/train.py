"""Train a small CNN on scikit-learn's digits (8x8 grey images, 10 classes) — SageMaker script mode.

Written the way AWS's PyTorch examples write their train.py: hyperparameters arrive as command-line arguments
(``--epochs 2 --use-cuda False``), the paths and the cluster as ``SM_*`` environment variables. Several hosts
train one model with DistributedDataParallel over gloo: under torchrun (the ``torch_distributed``
distribution) the process group comes from torchrun's RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT, otherwise
from SM_HOSTS and SM_CURRENT_HOST. The first worker saves the weights (model.pth, which inference.py loads into
``Net``) and a TorchScript copy (model.pt, which needs no Python code to load).

Data: CSV files, one image per row, the label (0-9) first, then the 64 pixel values (0-16), row by row.

Run it without SageMaker too::

    python train.py --epochs 5 --data-dir data/train --test-dir data/test --model-dir /tmp/digits-model
"""

import argparse
import glob
import json
import logging
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)
logger.addHandler(logging.StreamHandler(sys.stdout))

PIXEL_MAX = 16.0  # the digits' grey levels are 0..16


class Net(nn.Module):
    """Two 3x3 convolutions, one 2x2 max-pool, two fully connected layers; log-probabilities out."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.dropout = nn.Dropout(0.25)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.dropout(torch.flatten(x, 1))
        x = self.dropout(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def str2bool(value):
    """argparse type for booleans. SageMaker passes them as text: SDK v2 and the training toolkit send
    ``--use-cuda False``, SDK v3's ModelTrainer sends ``--use-cuda false``. ``type=bool`` would read both as
    True (any non-empty string is), and ``action="store_true"`` cannot work (every hyperparameter has a value)."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("true", "t", "yes", "y", "1"):
        return True
    if value.lower() in ("false", "f", "no", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {value!r}")


def to_images(pixels):
    """(N, 64) pixel values 0..16 -> (N, 1, 8, 8) float32 tensor scaled to 0..1."""
    pixels = torch.as_tensor(np.asarray(pixels, dtype=np.float32))
    return pixels.reshape(-1, 1, 8, 8) / PIXEL_MAX


def load_dataset(directory):
    files = sorted(glob.glob(os.path.join(directory, "*.csv")))
    if not files:
        raise ValueError(f"no .csv files in {directory}")
    rows = np.concatenate([np.loadtxt(f, delimiter=",", ndmin=2) for f in files])
    return TensorDataset(to_images(rows[:, 1:]), torch.as_tensor(rows[:, 0], dtype=torch.long))


def init_distributed(args):
    """Join the process group when there is more than one worker; return (rank, world_size)."""
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:  # torchrun set them
        world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    else:  # one process per host, as the PyTorch training toolkit starts it without a launcher
        world_size, rank = len(args.hosts), args.hosts.index(args.current_host)
        os.environ.setdefault("MASTER_ADDR", args.hosts[0])
        os.environ.setdefault("MASTER_PORT", "7777")
    if world_size > 1 and args.backend:
        dist.init_process_group(backend=args.backend, rank=rank, world_size=world_size)
        logger.info(f"distributed training: backend {args.backend}, rank {rank} of {world_size}")
        return rank, world_size
    return 0, 1


def evaluate(model, loader, device):
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            loss += F.nll_loss(output, target, reduction="sum").item()
            correct += output.argmax(dim=1).eq(target).sum().item()
    return loss / len(loader.dataset), correct


def train(args):
    rank, world_size = init_distributed(args)
    use_cuda = args.use_cuda and torch.cuda.is_available()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu")
    torch.manual_seed(args.seed)

    train_set = load_dataset(args.data_dir)
    sampler = DistributedSampler(train_set, world_size, rank, seed=args.seed) if world_size > 1 else None
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler)
    test_set = load_dataset(args.test_dir) if args.test_dir else train_set
    test_loader = DataLoader(test_set, batch_size=256)
    logger.info(f"{len(train_set)} training images ({len(sampler) if sampler else len(train_set)} on this worker)")

    model = Net().to(device)
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    for epoch in range(1, args.epochs + 1):
        model.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        total = 0.0
        for data, target in train_loader:
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(data)
        test_loss, correct = evaluate(model, test_loader, device)
        if rank == 0:
            # One line per epoch in the key=value form a tuner's MetricDefinitions regex reads.
            print(
                f"epoch={epoch} train_loss={total / len(train_loader.sampler):.4f} test_loss={test_loss:.4f} "
                f"test_accuracy={correct / len(test_set):.4f};",
                flush=True,
            )
    if rank == 0:
        logger.info(
            f"Test set: Average loss: {test_loss:.4f}, Accuracy: {correct}/{len(test_set)} "
            f"({100.0 * correct / len(test_set):.0f}%)"
        )
        save_model(model.module if world_size > 1 else model, args.model_dir)
    if world_size > 1:
        dist.destroy_process_group()


def save_model(model, model_dir):
    model = model.cpu().eval()
    os.makedirs(model_dir, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(model_dir, "model.pth"))
    torch.jit.script(model).save(os.path.join(model_dir, "model.pt"))
    logger.info(f"saved model.pth and model.pt to {model_dir}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size (default: 64)")
    parser.add_argument("--epochs", type=int, default=10, help="number of epochs (default: 10)")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate (default: 0.01)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument("--use-cuda", type=str2bool, default=False, help="train on the GPU when there is one")
    parser.add_argument("--backend", type=str, default="gloo", help="torch.distributed backend (gloo, nccl)")

    # SageMaker's container environment.
    parser.add_argument("--hosts", type=json.loads, default=os.environ.get("SM_HOSTS", '["algo-1"]'))
    parser.add_argument("--current-host", type=str, default=os.environ.get("SM_CURRENT_HOST", "algo-1"))
    parser.add_argument("--model-dir", type=str, default=os.environ.get("SM_MODEL_DIR", "model"))
    parser.add_argument("--data-dir", type=str, default=os.environ.get("SM_CHANNEL_TRAINING", "data/train"))
    parser.add_argument("--test-dir", type=str, default=os.environ.get("SM_CHANNEL_TESTING"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    train(parse_args())
