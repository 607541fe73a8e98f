/* cli.h: the command line of every scadles-<app>, one parser over getopt_long. An app lists its
 * options; sd_cli_parse reads the whole line first and then hands back the options in order, so that
 * the app checks each value as before:
 *   --opt VALUE and --opt=VALUE alike (a one-letter -X VALUE or -XVALUE), names spelled out in full;
 *   --help or -h anywhere on the line (where a value would be too, before any "--"): the app's usage
 *   on stdout, exit 0, whatever else is there; --version alike: "scadles-<app> <SD_VERSION_STRING>";
 *   the first of them decides;
 *   an unknown option, a missing value, a value given to a flag that takes none or a word that is no
 *   option: one line on stderr naming it, "scadles-<app>: ... (see --help)", exit 2.
 * App code only (it exits, as only apps may; docs/architecture.md), hence apps/cli/ and not base/. */
#ifndef SD_APPS_CLI_H
#define SD_APPS_CLI_H

#include <stdbool.h>
#include <stdio.h>

/* One option of an app; a table of them ends with {NULL}. */
typedef struct sd_cli_option {
    const char *name; /* "--lr", or a single letter "-X" */
    bool value;       /* takes a value */
    const char *hint; /* said when the value is missing: "an experiment file, e.g. ..." (NULL: nothing) */
} sd_cli_option;

/* One option as given: flag is the table's name (compare it with strcmp), value the text after
 * it (NULL for a flag that takes none). */
typedef struct sd_cli_arg {
    const char *flag, *value;
} sd_cli_arg;

typedef struct sd_cli {
    sd_cli_arg *args; /* in the order of the command line; a repeated option appears each time */
    int n;
} sd_cli;

/* Reads argv against options (app: "train" for scadles-train; usage prints the app's usage to the
 * stream it is given). Exits as the header says on --help, --version and bad syntax; otherwise fills
 * cli (free it with sd_cli_free). Out of memory: a message and exit 1. Call once per process. */
void sd_cli_parse(sd_cli *cli, const char *app, void (*usage)(FILE *f), const sd_cli_option *options, int argc,
                  char **argv);
void sd_cli_free(sd_cli *cli);

/* How many times flag (a name of the table) was given. */
int sd_cli_count(const sd_cli *cli, const char *flag);

#endif
