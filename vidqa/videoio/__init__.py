"""Internals of the video reader; the public API is :mod:`vidqa.video`.

* :mod:`.probe` -- ``open_video``: path checks, container sniffing, one-line ``VideoError`` reasons.
* :mod:`.sampling` -- target timestamps (fps, exact count, cap) and output sizes.
* :mod:`.orient` -- display matrix (rotation, mirroring) to an upright frame.
* :mod:`.pyav_backend` / :mod:`.decord_backend` -- decode the frame nearest each target.
* :mod:`.parallel` -- ordered worker threads for the PyAV backend's sparse reads.
* :mod:`.watchdog` -- run a backend in a thread, in bounded chunks, and fail instead of hanging.
"""
