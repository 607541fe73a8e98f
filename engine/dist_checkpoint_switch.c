/* dist_checkpoint_switch.c: replacing a checkpoint folder without losing the last good one. A new
 * checkpoint of <dir> is written into <dir>.new and switched in by two renames; before a resume, a
 * folder left incomplete by a kill is replaced by the complete one beside it (dist_checkpoint.h,
 * docs/checkpoints.md). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/dist_checkpoint.h"

void sd_dist_ckpt_sibling(const char *dir, const char *suffix, char *out, size_t cap) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--; /* "ckpt/" and "ckpt" have the same siblings */
    snprintf(out, cap, "%.*s%s", (int)n, dir, suffix);
}

static bool is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool has_run_file(const char *dir) {
    char path[1200];
    sd_dist_ckpt_path(dir, -1, path, sizeof path);
    return access(path, F_OK) == 0;
}

/* Removes a checkpoint folder: its files (a checkpoint holds no subfolders), then the folder. */
static sd_status remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return SD_OK;
        return SD_FAIL(SD_ERR_IO, "cannot open %s to remove it: %s", dir, strerror(errno));
    }
    sd_status s = SD_OK;
    for (struct dirent *de; s == SD_OK && (de = readdir(d));) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (unlink(path) != 0 && errno != ENOENT)
            s = SD_FAIL(SD_ERR_IO, "cannot remove %s: %s; remove %s by hand", path, strerror(errno), dir);
    }
    closedir(d);
    TRY(s);
    if (rmdir(dir) != 0 && errno != ENOENT) return SD_FAIL(SD_ERR_IO, "cannot remove %s: %s", dir, strerror(errno));
    return SD_OK;
}

/* The renames reach the disk in order (best effort: a folder that cannot be opened is left alone). */
static void sync_parent(const char *dir) {
    char parent[1100];
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash == parent) slash[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(parent, sizeof parent, ".");
    int fd = open(parent, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

static sd_status move(const char *from, const char *to) {
    if (rename(from, to) != 0)
        return SD_FAIL(SD_ERR_IO, "cannot rename %s to %s: %s", from, to, strerror(errno));
    sync_parent(to);
    return SD_OK;
}

sd_status sd_dist_ckpt_begin(const char *dir) {
    char next[1100];
    sd_dist_ckpt_sibling(dir, ".new", next, sizeof next);
    TRY(remove_dir(next));
    TRY(sd_dist_ckpt_mkdir(next));
    return SD_OK;
}

sd_status sd_dist_ckpt_switch(const char *dir) {
    char next[1100], old[1100];
    sd_dist_ckpt_sibling(dir, ".new", next, sizeof next);
    sd_dist_ckpt_sibling(dir, ".old", old, sizeof old);
    TRY(remove_dir(old));
    if (is_dir(dir)) TRY(move(dir, old));
    TRY(move(next, dir));
    TRY(remove_dir(old));
    return SD_OK;
}

sd_status sd_dist_ckpt_recover(const char *dir, char *recovered, size_t cap) {
    if (recovered && cap) recovered[0] = '\0';
    if (has_run_file(dir)) return SD_OK;
    char next[1100], old[1100];
    sd_dist_ckpt_sibling(dir, ".new", next, sizeof next);
    sd_dist_ckpt_sibling(dir, ".old", old, sizeof old);
    const char *use = has_run_file(next) ? next : has_run_file(old) ? old : NULL;
    if (!use) return SD_OK; /* nothing to recover: reading dir says what is wrong with it */
    if (is_dir(dir)) TRY(remove_dir(dir)); /* incomplete: what it holds is also in the complete one */
    TRY(move(use, dir));
    if (use == next) TRY(remove_dir(old));
    if (recovered && cap) snprintf(recovered, cap, "%s", use);
    return SD_OK;
}

