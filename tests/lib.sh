# SPDX-License-Identifier: MIT
# Helpers shared by the shell tests that run programs under `heca run`; sourced, not run.

# written_back FILE: the largest "written back N" of the statistics heca run printed in FILE
# (one line per process of the program), empty if it printed none.
written_back() {
	sed -n 's/.*written back \([0-9]*\),.*/\1/p' "$1" | sort -n | tail -1
}
