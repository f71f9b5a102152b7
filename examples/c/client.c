/*
 * client: send a file (or a directory tree) to an rdmaft receiver, as the original
 * librdmaft's client did, through the C API.
 *
 *   client SERVER_IP FILE [PORT [BUFFER_SIZE]]
 *
 * Exits 0 once the receiver has the file, verified; 1 with the reason otherwise.
 * Only rdmaft_send.h is included: it brings <stdio.h> and friends, as the original did.
 */
#include "rdmaft_send.h"

static void on_sent(const char *filename)
{
    printf("sent %s\n", filename);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s SERVER_IP FILE [PORT [BUFFER_SIZE]]\n", argv[0]);
        return 2;
    }
    char *port = argc > 3 ? argv[3] : "15000";
    size_t buffer_size = argc > 4 ? strtoul(argv[4], NULL, 0) : 0;

    struct rdmaft_send_client_context *ctx =
        rdmaft_start_send(argv[1], port, argv[2], buffer_size, on_sent);
    if (ctx == NULL) {
        fprintf(stderr, "client: %s\n", rdmaft_last_error());
        return 1;
    }
    int status = rdmaft_send_wait(ctx);
    if (status != RDMAFT_OK)
        fprintf(stderr, "client: %s: %s\n", rdmaft_strerror(status), rdmaft_last_error());
    rdmaft_stop_send(ctx);
    return status == RDMAFT_OK ? 0 : 1;
}
