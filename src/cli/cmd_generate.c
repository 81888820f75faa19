/* cmd_generate.c - shrink generate. */
#include <stdio.h>

#include "cli.h"

int cmd_generate(int argc, char **argv)
{
    (void)argc, (void)argv;
    fprintf(stderr, "shrink generate: not implemented yet\n");
    return EXIT_FAIL;
}
