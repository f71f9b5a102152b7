/*
 * rdmaft_recv.h: receiving, as in the original librdmaft (same names, types and argument
 * order), plus a callback variant with a status.
 */
#ifndef RDMAFT_RECV_H
#define RDMAFT_RECV_H

#include "rdmaft.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called (on the connection's thread) with each file's name, relative to recv_dir, once it
 * arrived, its digest matched and it was published under its final name (linked or renamed
 * there from a temporary file; never before). */
typedef void (*rdmaft_recv_cb)(const char *filename);

/* Opaque: a handle, never dereferenced by the library. Each start call returns a new value
 * that is never handed out again, so a context that was stopped stays a defined argument:
 * every call on it is answered (a no-op, or 0) instead of touching freed memory. Any value
 * (NULL, stopped, from the send side) may be passed to the calls below.
 *
 * Lifetime rules, for any threads:
 * - stop from a callback: stops the receiver and joins every other thread of it; the
 *   calling thread ends by itself once the callback returns.
 * - stop twice, or from two threads at once (two callbacks on two connections included):
 *   one stops, the other does nothing (it returns once the first has finished, unless it
 *   runs in a callback of this receiver, which the first may be joining).
 * - stop while transfers run: they end (the senders are told), their unfinished files are
 *   removed.
 * - no callback of a receiver starts after its stop was called. A stop made outside the
 *   callbacks returns once the receiver's threads ended, except a thread whose callback
 *   called stop first: it ends by itself once that callback returns. */
struct rdmaft_recv_server_context;

/* Listens on `port` (all addresses) and writes into `recv_dir` (which must exist), serving
 * any number of senders on threads of its own; returns at once, NULL if it cannot start
 * (see rdmaft_last_error). buffer_size: the largest chunk size to agree to (0: the default,
 * or the size last given to rdmaft_reset_recv_buffer_size). func may be NULL.
 *
 * What a receiver guarantees whatever a sender does (SECURITY.md has the whole list): names
 * are resolved beneath recv_dir without following symbolic links, and names beginning with
 * ".rdmaft-" (its own temporary files) are refused; modes are the sender's permission bits
 * less the process's umask; at most 8 connections may be between their request and their
 * key proof; it raises the process's soft RLIMIT_NOFILE to the hard limit and refuses a file
 * (RDMAFT_EREJECTED, "busy") rather than run out of descriptors; the memory registered for a
 * connection is returned when it ends. At start it removes the temporary files receivers
 * killed mid-transfer left under recv_dir (only its user's, of processes no longer alive). */
struct rdmaft_recv_server_context *rdmaft_start_recv(char *port, char *recv_dir,
        size_t buffer_size, rdmaft_recv_cb func);

/* Stops the receiver: running transfers end, their unfinished files are removed; joins its
 * threads and frees the context. NULL, and a context already stopped, are ignored. May be
 * called from a callback (see the rules above). */
void rdmaft_stop_recv(struct rdmaft_recv_server_context *context);

/* Sets the buffer size for connections accepted from now on, by every running receiver and
 * by receivers started later with a buffer_size of 0 (0: the default). */
void rdmaft_reset_recv_buffer_size(size_t buffer_size);

/* The buffer size a receiver offers new connections now (0 for NULL or a stopped one). */
size_t rdmaft_recv_buffer_size(const struct rdmaft_recv_server_context *context);

/* Called (on the connection's thread) for every entry with its status (RDMAFT_OK: received
 * and verified) and the pointer given at start. */
typedef void (*rdmaft_recv_status_cb)(const char *filename, int status, void *user);

/* As rdmaft_start_recv, listening on `addr` (an IP address; NULL: all addresses), with the
 * status callback. */
struct rdmaft_recv_server_context *rdmaft_start_recv_ex(const char *addr, const char *port,
        const char *recv_dir, size_t buffer_size, rdmaft_recv_status_cb func, void *user);

#ifdef __cplusplus
}
#endif

#endif /* RDMAFT_RECV_H */
