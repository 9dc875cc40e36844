/* mqforkstat - statistics reader (being written). */
#include <stdio.h>
int main(void)
{
    fprintf(stderr, "mqforkstat: not written yet\n");
    return 2;
}
