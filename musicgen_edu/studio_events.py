"""Widget clicks while a notebook cell waits: what keeps ``studio.generate(...)`` cancellable.

A Jupyter kernel handles one shell message at a time on its main thread, and running a cell is
one message. While a cell waits for the studio's worker thread (``studio.generate(...)``, how
lecture 07 drives the studio), the front end's widget messages (a click on Cancel, a moved
slider) queue behind the cell and would be handled only once the run is over. So the waiting
cell reads the queue itself, the path of one click:

    cell: studio.generate(...) ─► Studio.wait ─► wait_for(worker thread)
        every 20 ms, the main shell's inbox (a zmq socket the kernel reads when it is idle):
            comm_msg (a widget event) ─► handled now, as the idle kernel would (Cancel: the
                                         worker stops at its next decoder step)
            anything else (the next cells of a Run All, a completion request)
                                      ─► held, handed back in order when the wait ends
        the kernel's stop button (KeyboardInterrupt) ─► the run is cancelled, then re-raised

Where the inbox is (ipykernel internals; this table is the only code that knows them):
    ipykernel >= 7   a shell channel thread receives every shell message and forwards the main
                     shell's through an inproc socket pair (tested on 7.4),
                     ``kernel.shell_channel_thread.manager._shell_channel_to_main.to_stream``
    ipykernel 6      (what Colab's kernel builds on; checked on 6.17.1) the shell socket
                     itself, ``kernel.shell_stream``
Outside a kernel's main thread (a script, a test, a widget callback) and in a kernel laid out
otherwise (an AttributeError here), ``wait_for`` simply waits. A message is peeked at without
recording its signature (``Session.deserialize(content=False)``), so a held one is accepted
when the kernel reads it. jupyter-ui-poll does this job through ``kernel.do_one_iteration``,
which ipykernel 7.4 does not have (it then handles nothing); see docs/studio.md.
"""

from __future__ import annotations

import sys
import threading
import time

__all__ = ["wait_for"]

POLL_SECONDS = 0.02    # how often a waiting cell reads the widget messages


def _kernel():
    """The ipykernel kernel running this code on its main thread, or None."""
    if threading.current_thread() is not threading.main_thread() or "ipykernel" not in sys.modules:
        return None
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None)     # a terminal IPython has no kernel


def _main_shell_stream(kernel):
    """The ZMQStream whose socket holds the main shell's unread messages (the table above)."""
    import ipykernel

    if int(ipykernel.__version__.split(".")[0]) >= 7 and kernel.shell_channel_thread:
        return kernel.shell_channel_thread.manager._shell_channel_to_main.to_stream
    return kernel.shell_stream


class _Inbox:
    """The main shell's pending messages, read while a cell waits: widget events are handled,
    everything else is held and handed back to the kernel, in order, by :meth:`close`."""

    def __init__(self, kernel):
        self.kernel, self.stream, self.held = kernel, _main_shell_stream(kernel), []

    def handle_widget_events(self) -> None:
        import zmq

        session = self.kernel.session
        while True:
            try:
                raw = self.stream.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                idents, parts = session.feed_identities(raw, copy=False)
                peek = session.deserialize(list(parts), content=False, copy=False)  # no digest
            except (ValueError, TypeError):               # malformed or badly signed: the
                self.held.append(raw)                     # kernel reports it, as it would
                continue
            if peek["header"]["msg_type"] != "comm_msg":
                self.held.append(raw)                     # a later cell: it runs after this one
                continue
            msg = session.deserialize(list(parts), content=True, copy=False)
            self.kernel.comm_manager.comm_msg(self.stream, idents, msg)

    def close(self) -> None:
        """Give the held messages back to the kernel, in the order they came."""
        for raw in self.held:
            self.stream._run_callback(self.stream._recv_callback, raw)   # as the stream would
        self.held = []


def wait_for(thread: threading.Thread, timeout: float | None = None, on_interrupt=None) -> None:
    """Wait for ``thread`` to end; in a notebook cell, handle widget clicks (Cancel) meanwhile.

    It sleeps in short steps instead of ``thread.join``: a KeyboardInterrupt inside ``join``
    (in CPython's ``Thread._wait_for_tstate_lock``) can leave the thread marked as ended while
    it still runs, and then Cancel would see nothing to cancel.

    Args:
        thread: the thread to wait for (the studio's worker).
        timeout: give up after this many seconds (``None``: wait until it ends).
        on_interrupt: called on KeyboardInterrupt (the kernel's stop button) before it is
            re-raised, e.g. ``studio.cancel``; the thread is then waited for, so nothing runs on.
    """
    kernel, inbox = _kernel(), None
    if kernel is not None:
        try:
            inbox = _Inbox(kernel)
        except AttributeError:                    # a kernel laid out otherwise: wait plainly
            inbox = None
    end = None if timeout is None else time.monotonic() + timeout
    try:
        while thread.is_alive() and (end is None or time.monotonic() < end):
            if inbox is not None:
                inbox.handle_widget_events()
            time.sleep(POLL_SECONDS if end is None else
                       max(0.0, min(POLL_SECONDS, end - time.monotonic())))
    except KeyboardInterrupt:
        if on_interrupt is not None:
            on_interrupt()
            while thread.is_alive():
                time.sleep(POLL_SECONDS)
        raise
    finally:
        if inbox is not None:
            inbox.close()
