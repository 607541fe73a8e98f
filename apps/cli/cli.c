/* cli.c: the apps' command line over getopt_long (apps/cli/cli.h says what it accepts). One pass
 * reads the whole line, so that --help wins wherever it stands; the options come back in order for
 * the app to check their values. */
#include "apps/cli/cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "base/version.h"

enum { SD_CLI_FIRST = 256 }; /* getopt_long's val of options[i] is SD_CLI_FIRST + i; of a letter, the letter */

/* The table index of what getopt_long returned (a val), or -1. */
static int index_of(const sd_cli_option *options, int nopt, int val) {
    if (val >= SD_CLI_FIRST && val < SD_CLI_FIRST + nopt) return val - SD_CLI_FIRST;
    for (int i = 0; i < nopt; i++)
        if (val > 0 && val < 256 && options[i].name[1] == (char)val && options[i].name[2] == '\0') return i;
    return -1;
}

static void out_of_memory(const char *app) {
    fprintf(stderr, "scadles-%s: out of memory reading the command line\n", app);
    exit(1);
}

void sd_cli_parse(sd_cli *cli, const char *app, void (*usage)(FILE *f), const sd_cli_option *options, int argc,
                  char **argv) {
    int nopt = 0;
    while (options[nopt].name) nopt++;
    const int help_val = SD_CLI_FIRST + nopt, version_val = help_val + 1;
    struct option *lo = calloc((size_t)nopt + 3, sizeof *lo);
    char *shortopts = malloc((size_t)nopt * 2 + 8);
    cli->args = calloc(argc > 0 ? (size_t)argc : 1, sizeof *cli->args);
    cli->n = 0;
    if (!lo || !shortopts || !cli->args) out_of_memory(app);
    /* "-": every word comes back in order (nothing is permuted, a stray word is caught);
     * ":": a missing value is told apart from an unknown option, and getopt prints nothing */
    int nlo = 0, ns = 0;
    shortopts[ns++] = '-';
    shortopts[ns++] = ':';
    shortopts[ns++] = 'h';
    for (int i = 0; i < nopt; i++) {
        const char *nm = options[i].name;
        if (nm[0] == '-' && nm[1] == '-') {
            const int has = options[i].value ? required_argument : no_argument;
            lo[nlo++] = (struct option){nm + 2, has, NULL, SD_CLI_FIRST + i};
        } else {
            shortopts[ns++] = nm[1];
            if (options[i].value) shortopts[ns++] = ':';
        }
    }
    shortopts[ns] = '\0';
    lo[nlo++] = (struct option){"help", no_argument, NULL, help_val};
    lo[nlo++] = (struct option){"version", no_argument, NULL, version_val};

    char err[512] = ""; /* the first error; --help or --version anywhere still wins */
    int asked = 0;      /* the first of help_val, version_val */
    for (int i = 1; i < argc && !asked && strcmp(argv[i], "--"); i++) { /* where a value would be too: --lr --help */
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) asked = help_val;
        else if (!strcmp(argv[i], "--version")) asked = version_val;
    }
    opterr = 0;
    optind = 0; /* glibc and musl: start afresh */
    for (;;) {
        const int at = optind ? optind : 1; /* the word a long option is read from */
        int longi = -1;
        const int c = getopt_long(argc, argv, shortopts, lo, &longi);
        if (c == -1) break;
        const char *word = at < argc ? argv[at] : "";
        const int wlen = (int)strcspn(word, "=");
        char e[sizeof err] = "";
        if (c >= SD_CLI_FIRST && longi >= 0 && (strncmp(word, "--", 2) || wlen - 2 != (int)strlen(lo[longi].name))) {
            /* getopt_long takes an abbreviation; the apps' names are spelled out in full */
            snprintf(e, sizeof e, "unknown option '%.*s' (did you mean --%s? see --help)", wlen, word, lo[longi].name);
        } else if (c == 'h' || c == help_val || c == version_val) {
            if (!asked) asked = c == version_val ? version_val : help_val;
        } else if (c == 1) {
            snprintf(e, sizeof e, "unexpected argument '%s': options start with -- (see --help)", optarg);
        } else if (c == ':') {
            const int i = index_of(options, nopt, optopt);
            const char *hint = i >= 0 ? options[i].hint : NULL;
            snprintf(e, sizeof e, "%s needs a value%s%s (see --help)", i >= 0 ? options[i].name : word,
                     hint ? ": " : "", hint ? hint : "");
        } else if (c == '?') {
            if (optopt >= SD_CLI_FIRST)
                snprintf(e, sizeof e, "%.*s takes no value (got '%s'; see --help)", wlen, word, word);
            else if (optopt > 0)
                snprintf(e, sizeof e, "unknown option '-%c' (see --help)", optopt);
            else
                snprintf(e, sizeof e, "unknown option '%.*s' (see --help)", wlen, word);
        } else {
            const int i = index_of(options, nopt, c);
            if (i >= 0) cli->args[cli->n++] = (sd_cli_arg){options[i].name, options[i].value ? optarg : NULL};
            else snprintf(e, sizeof e, "unknown option '%s' (see --help)", word); /* no table holds it: not expected */
        }
        if (e[0] && !err[0]) snprintf(err, sizeof err, "%s", e);
    }
    if (!err[0] && optind < argc) /* words after "--" */
        snprintf(err, sizeof err, "unexpected argument '%s' (see --help)", argv[optind]);
    free(lo);
    free(shortopts);
    if (asked == help_val) {
        usage(stdout);
        printf("Options take their value as --opt VALUE or --opt=VALUE; --version prints the version.\n");
    } else if (asked == version_val) {
        printf("scadles-%s %s\n", app, SD_VERSION_STRING);
    } else if (err[0]) {
        fprintf(stderr, "scadles-%s: %s\n", app, err);
    }
    if (asked || err[0]) {
        fflush(stdout);
        sd_cli_free(cli);
        exit(asked ? 0 : 2);
    }
}

void sd_cli_free(sd_cli *cli) {
    free(cli->args);
    cli->args = NULL;
    cli->n = 0;
}

int sd_cli_count(const sd_cli *cli, const char *flag) {
    int n = 0;
    for (int i = 0; i < cli->n; i++) n += !strcmp(cli->args[i].flag, flag);
    return n;
}
