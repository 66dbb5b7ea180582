"""Interactive viewer for trained runs: a Qt-free camera model, a render worker thread and the main window."""
