//! Container init for the stages crate's tests: the spawn stage starts this binary as
//! the init process of a container, as the agent starts itself.

fn main() {
    rustjail::init_main()
}
