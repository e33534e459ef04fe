"""``rskip-average-checkpoints``: average the parameters of fairseq checkpoints
(the command line of fairseq's average_checkpoints.py; see
:mod:`fairseq_rskip.checkpoint_averaging`).

    rskip-average-checkpoints --inputs CKPT_DIR --num-epoch-checkpoints 5 \
        --output CKPT_DIR/checkpoint.avg5.pt
"""

import argparse
import sys

from fairseq_rskip.errors import UserError, run_main


def build_parser(prog="rskip-average-checkpoints"):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", required=True, nargs="+", help="checkpoint files, or one directory")
    parser.add_argument("--output", required=True, help="where to write the averaged checkpoint")
    num = parser.add_mutually_exclusive_group()
    num.add_argument("--num-epoch-checkpoints", type=int, help="average the last N checkpointEPOCH.pt")
    num.add_argument("--num-update-checkpoints", type=int, help="average the last N checkpoint_EPOCH_UPDATE.pt")
    parser.add_argument("--checkpoint-upper-bound", type=int, help="ignore checkpoints after this epoch/update")
    return parser


def main(argv=None):
    from fairseq_rskip.checkpoint_averaging import last_n_checkpoints, write_average

    args = build_parser().parse_args(argv)
    inputs = args.inputs
    if args.num_update_checkpoints is not None:
        flag, n = "--num-update-checkpoints", args.num_update_checkpoints
    else:
        flag, n = "--num-epoch-checkpoints", args.num_epoch_checkpoints
    if n is not None:
        if n < 1:
            raise UserError(f"{flag} must be at least 1 (the number of checkpoints to average); got {n}")
        if len(inputs) != 1:
            raise UserError("--num-*-checkpoints takes a single directory in --inputs")
        inputs = last_n_checkpoints(
            inputs[0], n, args.num_update_checkpoints is not None, args.checkpoint_upper_bound
        )
    print("averaging:", " ".join(inputs), file=sys.stderr)
    output = write_average(inputs, args.output)
    print(f"wrote {output}", file=sys.stderr)
    return output


def cli_main():
    run_main(main)


if __name__ == "__main__":
    cli_main()
