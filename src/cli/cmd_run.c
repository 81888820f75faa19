/* cmd_run.c - shrink run. */
#include <stdio.h>

#include "cli.h"

int cmd_run(int argc, char **argv)
{
    (void)argc, (void)argv;
    fprintf(stderr, "shrink run: not implemented yet\n");
    return EXIT_FAIL;
}
