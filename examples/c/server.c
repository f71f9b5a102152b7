/*
 * server: receive files into a directory, as the original librdmaft's server did, through
 * the C API.
 *
 *   server [PORT [DIR [COUNT [BUFFER_SIZE]]]]
 *
 * Prints one line per file received and verified. With COUNT, exits 0 after that many
 * files; without, runs until SIGINT or SIGTERM.
 */
#include "rdmaft_recv.h"
#include <signal.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static long received;

static void on_received(const char *filename)
{
    printf("received %s\n", filename);
    fflush(stdout);
    pthread_mutex_lock(&lock);
    received++;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

int main(int argc, char **argv)
{
    char *port = argc > 1 ? argv[1] : "15000";
    char *dir = argc > 2 ? argv[2] : ".";
    long count = argc > 3 ? strtol(argv[3], NULL, 10) : 0;
    size_t buffer_size = argc > 4 ? strtoul(argv[4], NULL, 0) : 0;

    /* Signals are taken by sigwait below, not by the library's threads. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    struct rdmaft_recv_server_context *ctx =
        rdmaft_start_recv(port, dir, buffer_size, on_received);
    if (ctx == NULL) {
        fprintf(stderr, "server: %s\n", rdmaft_last_error());
        return 1;
    }
    fprintf(stderr, "server: listening on port %s, writing into %s\n", port, dir);

    if (count > 0) {
        pthread_mutex_lock(&lock);
        while (received < count)
            pthread_cond_wait(&changed, &lock);
        pthread_mutex_unlock(&lock);
    } else {
        int sig;
        sigwait(&stop_signals, &sig);
    }
    rdmaft_stop_recv(ctx);
    return 0;
}
