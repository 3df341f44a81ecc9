"""What the programs run, as library functions: each `run(...)` reads no flags and writes one workdir.

training (train.py), defend (defend.py), extraction (extract.py), membership (mia.py), tables
(survey_tables.py); victims.load gives an artifact with its data.
"""
