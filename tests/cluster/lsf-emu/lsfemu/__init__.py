"""An emulator of IBM Spectrum LSF's user commands for flowrun's tests. Not LSF: see the
README beside this package."""
