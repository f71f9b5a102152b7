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
 * arrived, its digest matched and it was renamed onto its final name. */
typedef void (*rdmaft_recv_cb)(const char *filename);

/* Opaque. */
struct rdmaft_recv_server_context;

/* Listens on `port` (all addresses) and writes into `recv_dir` (which must exist), serving
 * any number of senders on threads of its own; returns at once, NULL if it cannot start
 * (see rdmaft_last_error). buffer_size: the largest chunk size to agree to (0: the default,
 * or the size last given to rdmaft_reset_recv_buffer_size). func may be NULL. */
struct rdmaft_recv_server_context *rdmaft_start_recv(char *port, char *recv_dir,
        size_t buffer_size, rdmaft_recv_cb func);

/* Stops the receiver: running transfers end, their unfinished files are removed; joins its
 * threads and frees the context. NULL is ignored. May be called from a callback. */
void rdmaft_stop_recv(struct rdmaft_recv_server_context *context);

/* Sets the buffer size for connections accepted from now on, by every running receiver and
 * by receivers started later with a buffer_size of 0 (0: the default). */
void rdmaft_reset_recv_buffer_size(size_t buffer_size);

/* The buffer size a receiver offers new connections now (0 for NULL). */
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
