"""Train SSD: ``python train.py --help`` (multi-GPU: ``torchrun --nproc_per_node=N train.py``)."""

from ssd.training import main

if __name__ == "__main__":
    main()
