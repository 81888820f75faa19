/* cmd_convert.c - shrink convert. */
#include <stdio.h>

#include "cli.h"

int cmd_convert(int argc, char **argv)
{
    (void)argc, (void)argv;
    fprintf(stderr, "shrink convert: not implemented yet\n");
    return EXIT_FAIL;
}
