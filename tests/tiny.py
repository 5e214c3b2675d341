"""The smallest training run the tests use: resnet18 from scratch at 64x32, 2x2 batches, no loader processes."""

TINY = {
    "arch": "resnet18",
    "pretrained": False,
    "input_size": "64x32",
    "discriminator_width": 8,
    "batch_ids": 2,
    "batch_instances": 2,
    "workers": 0,
}
#: The same as ``reidx train`` flags.
CLI_TINY = [
    "--arch", "resnet18", "--no-pretrained", "--input-size", "64x32", "--discriminator-width", "8",
    "--batch-ids", "2", "--batch-instances", "2", "--workers", "0",
]  # fmt: skip
