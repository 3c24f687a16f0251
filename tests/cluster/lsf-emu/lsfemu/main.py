"""Entry point of the command launchers in bin/."""

import sys


def run(command):
    try:
        if command == "bsub":
            from . import bsub
            bsub.main(sys.argv[1:])
        elif command == "bjobs":
            from . import bjobs
            bjobs.main(sys.argv[1:])
        elif command in ("bkill", "bstop", "bresume"):
            from . import bsignal
            bsignal.main(command, sys.argv[1:])
        elif command == "lsf-emu-ctl":
            from . import ctl
            sys.exit(ctl.main(sys.argv[1:]))
        else:
            sys.exit(f"lsf-emu: unknown command {command}")
    except BrokenPipeError:
        sys.exit(255)
    except KeyboardInterrupt:
        sys.exit(130)
