/* src/ctl_main.c - the wakegatectl executable; everything is in ctl.c. */
#include "src/ctl.h"

int main(int argc, char **argv)
{
    return wg_ctl_main(argc, argv);
}
