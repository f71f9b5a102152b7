/*
 * rdmaft_send.h: sending, as in the original librdmaft (same names, types and argument
 * order), plus a blocking wait and a callback variant with a status.
 */
#ifndef RDMAFT_SEND_H
#define RDMAFT_SEND_H

#include <stdint.h>

#include "rdmaft.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called (on the send's thread) with the file name once the file was delivered and its
 * digest verified by the receiver. */
typedef void (*rdmaft_send_cb)(const char *filename);

/* Opaque: a handle, never dereferenced by the library. Each start call returns a new value
 * that is never handed out again, so a context that was stopped stays a defined argument:
 * every call on it is answered (a no-op, or RDMAFT_EINVAL) instead of touching freed
 * memory. Any value (NULL, stopped, from the receive side) may be passed to the calls below.
 *
 * Lifetime rules, for any threads:
 * - stop while another thread is in rdmaft_send_wait: the stop cancels the send and returns
 *   once its threads ended; the waiter returns the send's status (RDMAFT_EUNFINISHED, as the
 *   send was cut short, unless every file had already arrived: RDMAFT_OK).
 * - stop from the send's own callback: cancels the send and returns at once (the send's
 *   thread, the caller, ends by itself once the callback returns; a wait in progress on
 *   another thread returns then).
 * - stop twice, or from two threads at once: one stops, the other does nothing (it returns
 *   once the first has finished, unless it runs in the send's own callback).
 * - wait after stop: RDMAFT_EINVAL ("no such send context"); a wait already in progress
 *   when the stop came returns the send's status.
 * - no callback of a send starts after its stop was called. A stop made outside the
 *   callback returns once the send's threads ended, unless a stop from the callback came
 *   first: that thread then ends by itself once its callback returns.
 * - do not stop context A from a callback of context B while B may be stopped from a
 *   callback of A: each stop would wait for the other's threads. */
struct rdmaft_send_client_context;

/* Starts sending `filename` (a file or a directory tree) to server_addr:port on a thread of
 * its own and returns at once; NULL if the arguments are unusable (see rdmaft_last_error).
 * buffer_size: the chunk size to propose (0: the default, 1 MiB); both sides use the smaller
 * one. func may be NULL. */
struct rdmaft_send_client_context *rdmaft_start_send(char *server_addr, char *port,
        char *filename, size_t buffer_size, rdmaft_send_cb func);

/* Stops the send (cancelling it if it still runs: call rdmaft_send_wait first to let it
 * finish), waits for its threads and frees the context. NULL, and a context already
 * stopped, are ignored. May be called from the send's callback (it then does not wait) and
 * while another thread waits (see the rules above). */
void rdmaft_stop_send(struct rdmaft_send_client_context *client_context);

/* Waits for the send to end. RDMAFT_OK if every entry of the path was reached and arrived
 * verified (a receiver that stopped right after the last verdict does not change that),
 * else the first failure's status (text in rdmaft_last_error): RDMAFT_EUNFINISHED also when
 * the session ended before the walk of the path reached every entry. May be called again, and from several
 * threads at once (the same answer). RDMAFT_EINVAL for NULL, for a context already
 * stopped, and from the send's own callback (it would wait for itself). */
int rdmaft_send_wait(struct rdmaft_send_client_context *client_context);

/* Called (on the send's thread) for every file with its status (RDMAFT_OK: delivered and
 * verified) and the pointer given at start. */
typedef void (*rdmaft_send_status_cb)(const char *filename, int status, void *user);

/* As rdmaft_start_send, with the status callback. */
struct rdmaft_send_client_context *rdmaft_start_send_ex(const char *server_addr,
        const char *port, const char *path, size_t buffer_size,
        rdmaft_send_status_cb func, void *user);

/* Settings beyond the buffer size. Zero a struct, set struct_size to its sizeof, then the
 * fields wanted: a zero field means the default, and a library built with an older or newer
 * header reads only the fields both know. */
struct rdmaft_send_options {
    size_t struct_size;   /* sizeof(struct rdmaft_send_options) */
    size_t buffer_size;   /* chunk size to propose; 0: 1 MiB */
    unsigned lanes;       /* connections carrying the transfer, 1..64; 0: one per four cores,
                           * at most 8 (a receiver without lanes gets one) */
    unsigned reserved;    /* 0 */
    uint64_t part_size;   /* files above one part are split over the lanes; 0: 64 MiB,
                           * else at least 4096 */
    unsigned shard_index; /* with shard_count > 0: send only shard shard_index (from 0) of */
    unsigned shard_count; /* shard_count, as `send --shard I/N`; 0: everything */
    unsigned sync;        /* RDMAFT_SYNC* flags, as `send --sync` and its options; 0: send all */
    unsigned flags;       /* RDMAFT_SEND_* flags; 0: none */
};

/* rdmaft_send_options.flags: LINKS sends symbolic links inside trees as links (`send
 * --links`) instead of skipping them; the receiver refuses unsafe ones (absolute, or
 * climbing out of its directory) unless it allows them. */
#define RDMAFT_SEND_LINKS    0x1u

/* rdmaft_send_options.sync: move only what changed (a file the receiver has with the same
 * size and mtime is up to date, RDMAFT_OK with nothing sent); with CHECKSUM compare
 * content; DRY_RUN changes nothing; DELETE removes, in each directory sent, what the
 * sender no longer has (not with shards). Any of them implies RDMAFT_SYNC. */
#define RDMAFT_SYNC          0x1u
#define RDMAFT_SYNC_CHECKSUM 0x2u
#define RDMAFT_SYNC_DRY_RUN  0x4u
#define RDMAFT_SYNC_DELETE   0x8u

/* As rdmaft_start_send_ex, with options (NULL: all defaults). With several lanes the status
 * callback runs on the lanes' threads, one call at a time. NULL, with RDMAFT_EINVAL, for
 * options out of range. */
struct rdmaft_send_client_context *rdmaft_start_send_opts(const char *server_addr,
        const char *port, const char *path, const struct rdmaft_send_options *options,
        rdmaft_send_status_cb func, void *user);

#ifdef __cplusplus
}
#endif

#endif /* RDMAFT_SEND_H */
