"""What msrun starts on each rank in test_distributed: train.py's own main, then
this rank's trained weights saved to DUMP_DIR/rank<R>.ckpt for comparison.

    msrun ... tests/distributed_worker.py DUMP_DIR [train.py flags]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train  # noqa: E402  (imports resnet_ms first)
import mindspore as ms  # noqa: E402

if __name__ == "__main__":
    import logging
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dump_dir = sys.argv[1]
    summary = train.main(sys.argv[2:])
    ms.save_checkpoint(summary["net"], os.path.join(dump_dir, f"rank{summary['rank']}.ckpt"))
