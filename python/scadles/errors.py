"""errors.py: the one exception the package raises for bad input (a missing or damaged file, a folder
that is not a run, a binary that cannot be found or failed). Its message names the thing and the fix."""


class ScadlesError(Exception):
    """A run folder, checkpoint, configuration or scadles-train invocation the package cannot use."""


class TrainError(ScadlesError):
    """scadles-train exited with a failure; `returncode`, `command` and `output` (its stdout and
    stderr) say how."""

    def __init__(self, message, returncode, command, output):
        super().__init__(message)
        self.returncode = returncode
        self.command = command
        self.output = output
