"""The update lifecycle: from an imported bundle to the running release, step by step.

`lifecycle` holds the one transition table; `verification` and `evidence` are the automatic
checks; `approval` what approvers sign; `install`, `releases`, `health`, `restart` and
`recovery` lay out, switch, check, roll back and recover after a crash.
"""
