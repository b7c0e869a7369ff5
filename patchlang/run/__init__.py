"""Running specs at scale: the `plan` command's driver, and (later) parallel and cluster execution."""
