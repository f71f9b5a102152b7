/*
 * rdmaft_send.h: sending, as in the original librdmaft (same names, types and argument
 * order), plus a blocking wait and a callback variant with a status.
 */
#ifndef RDMAFT_SEND_H
#define RDMAFT_SEND_H

#include "rdmaft.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called (on the send's thread) with the file name once the file was delivered and its
 * digest verified by the receiver. */
typedef void (*rdmaft_send_cb)(const char *filename);

/* Opaque. */
struct rdmaft_send_client_context;

/* Starts sending `filename` (a file or a directory tree) to server_addr:port on a thread of
 * its own and returns at once; NULL if the arguments are unusable (see rdmaft_last_error).
 * buffer_size: the chunk size to propose (0: the default, 1 MiB); both sides use the smaller
 * one. func may be NULL. */
struct rdmaft_send_client_context *rdmaft_start_send(char *server_addr, char *port,
        char *filename, size_t buffer_size, rdmaft_send_cb func);

/* Stops the send (cancelling it if it still runs: call rdmaft_send_wait first to let it
 * finish), waits for its threads and frees the context. NULL is ignored. */
void rdmaft_stop_send(struct rdmaft_send_client_context *client_context);

/* Waits for the send to end. RDMAFT_OK if every file arrived verified, else the first
 * failure's status (text in rdmaft_last_error). May be called again; not from the send's
 * own callback (RDMAFT_EINVAL). */
int rdmaft_send_wait(struct rdmaft_send_client_context *client_context);

/* Called (on the send's thread) for every file with its status (RDMAFT_OK: delivered and
 * verified) and the pointer given at start. */
typedef void (*rdmaft_send_status_cb)(const char *filename, int status, void *user);

/* As rdmaft_start_send, with the status callback. */
struct rdmaft_send_client_context *rdmaft_start_send_ex(const char *server_addr,
        const char *port, const char *path, size_t buffer_size,
        rdmaft_send_status_cb func, void *user);

#ifdef __cplusplus
}
#endif

#endif /* RDMAFT_SEND_H */
