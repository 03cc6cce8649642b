"""What the commands at the top level share: data and image files, the training recipe and loop, run
directories, metrics. It imports nothing itself, so that `--help` stays fast and free of TensorFlow."""
