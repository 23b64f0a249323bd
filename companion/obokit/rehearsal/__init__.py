"""The tenant rehearsal: the whole workbook with `OBOKIT_TARGET=tenant` against a standalone emulator.

Nobody sits at the keyboard. A scripted browser (`scripted_browser`, named in `BROWSER`) answers every
`webbrowser.open` of the kernels, and a scripted person (`person`) answers every device-code prompt the
kernels print. `plan` says who each sign-in is for; `guard` notes any kernel that imports `obokit.emulator`;
`events` counts prompts and sign-in pages per notebook; `runner` puts it together:

    python -m obokit.rehearsal [--profile tenant|quick] [--keep]
"""
