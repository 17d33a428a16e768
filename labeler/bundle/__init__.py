"""The model bundle: writing it (store), reading what the drivers need without torch (info), and the verified file set every read goes through (verified)."""
