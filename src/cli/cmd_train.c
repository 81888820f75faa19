/* cmd_train.c - shrink train. */
#include <stdio.h>

#include "cli.h"

int cmd_train(int argc, char **argv)
{
    (void)argc, (void)argv;
    fprintf(stderr, "shrink train: not implemented yet\n");
    return EXIT_FAIL;
}
