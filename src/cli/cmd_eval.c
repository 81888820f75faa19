/* cmd_eval.c - shrink eval. */
#include <stdio.h>

#include "cli.h"

int cmd_eval(int argc, char **argv)
{
    (void)argc, (void)argv;
    fprintf(stderr, "shrink eval: not implemented yet\n");
    return EXIT_FAIL;
}
