"""Speech recognition: the Recognizer protocol (recognizer.py), the Vosk implementation
(vosk_engine.py, the only module that imports vosk), offline and live transcription.

Knows nothing of calls or tickets. Importing this package does not load vosk.
"""
