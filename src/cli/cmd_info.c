/* cmd_info.c - shrink info. */
#include <stdio.h>

#include "cli.h"

int cmd_info(int argc, char **argv)
{
    (void)argc, (void)argv;
    fprintf(stderr, "shrink info: not implemented yet\n");
    return EXIT_FAIL;
}
